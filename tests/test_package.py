import subprocess
import sys


def test_import_is_light_and_does_nothing():
    code = ("import sys, caption_core, caption_core.images, caption_core.text, caption_core.decoding, "
            "caption_core.bundle, caption_core.encoders;"
            "heavy = [m for m in ('tensorflow', 'keras', 'torch', 'gradio', 'transformers', 'training') if m in sys.modules];"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
