// Runs the TF.js coco-ssd graph (pure-JS @tensorflow/tfjs, CPU backend) on raw RGB photos and writes its raw
// outputs: the reference that caption_core's PyTorch port is tested against.
// usage: node record.js MODEL_DIR INPUT.json OUTPUT_DIR
//   INPUT.json: [{"name": ..., "raw": "photo.rgb", "height": H, "width": W}]  (uint8 RGB, row-major)
// writes OUTPUT_DIR/<name>.scores.f32 (1917*90 float32) and <name>.boxes.f32 (1917*4 float32), little-endian
const fs = require("fs");
const path = require("path");
const tf = require("@tensorflow/tfjs");

async function main() {
  const [modelDir, inputJson, outDir] = process.argv.slice(2);
  await tf.setBackend("cpu");
  const spec = JSON.parse(fs.readFileSync(path.join(modelDir, "model.json"), "utf8"));
  const buffers = spec.weightsManifest.flatMap(g => g.paths.map(p => fs.readFileSync(path.join(modelDir, p))));
  const data = Buffer.concat(buffers);
  const weightSpecs = spec.weightsManifest.flatMap(g => g.weights);
  const handler = tf.io.fromMemory({modelTopology: spec.modelTopology, weightSpecs,
                                    weightData: data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength)});
  const model = await tf.loadGraphModel(handler);
  const inputs = JSON.parse(fs.readFileSync(inputJson, "utf8"));
  fs.mkdirSync(outDir, {recursive: true});
  for (const item of inputs) {
    const raw = fs.readFileSync(path.join(path.dirname(inputJson), item.raw));
    const image = tf.tensor4d(new Int32Array(raw), [1, item.height, item.width, 3], "int32");
    const [scores, boxes] = await model.executeAsync({image_tensor: image},
                                                     ["Postprocessor/Slice", "Postprocessor/ExpandDims_1"]);
    fs.writeFileSync(path.join(outDir, item.name + ".scores.f32"), Buffer.from((await scores.data()).buffer));
    fs.writeFileSync(path.join(outDir, item.name + ".boxes.f32"), Buffer.from((await boxes.data()).buffer));
    console.log(item.name, scores.shape.join("x"), boxes.shape.join("x"));
    tf.dispose([image, scores, boxes]);
  }
}
main().catch(e => { console.error(e); process.exit(1); });
