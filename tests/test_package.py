import subprocess
import sys


def test_import_is_light_and_does_nothing():
    code = ("import sys, caption_core, caption_core.images, caption_core.text, caption_core.decoding, "
            "caption_core.bundle, caption_core.encoders, caption_core.serving, caption_core.references;"
            "heavy = [m for m in ('tensorflow', 'keras', 'torch', 'gradio', 'transformers', 'training') if m in sys.modules];"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_import_circles_in_the_library():
    """Each caption_core module imports in a fresh interpreter on its own (a circle shows as an ImportError
    for some entry points only), and the encoders no longer import the bundle module."""
    import os

    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "caption_core")
    mods = sorted(f"caption_core.{f[:-3]}" for f in os.listdir(root) if f.endswith(".py") and f != "__main__.py")
    mods += ["caption_core.encoders.base", "caption_core.encoders.efficientnet_lite"]
    for m in mods:
        subprocess.run([sys.executable, "-c", f"import {m}"], check=True, capture_output=True)
    code = ("import sys, caption_core.encoders.base, caption_core.encoders.efficientnet_lite;"
            "print('caption_core.bundle' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
