"""The product must work where torchvision, open_clip and timm cannot be imported at all, as on
a CPU-only Linux torch (docs/MMAUDIO.md, Environment): the encoders import (and find the tokenizer vocabulary), and
`import nag_core`, the node pack and a complete tiny-model generation run in a fresh interpreter
with those packages blocked."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BLOCKER = textwrap.dedent('''
    import sys

    class _Blocker:
        """Makes the packages that break on CPU-only torch unimportable."""
        BLOCKED = ("torchvision", "open_clip", "timm")

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.BLOCKED:
                raise ImportError(f"{name} is blocked for this test")
            return None

    sys.meta_path.insert(0, _Blocker())
''')

CHECK = textwrap.dedent('''
    import sys
    for name in ("torchvision", "open_clip", "timm"):
        try:
            __import__(name)
        except ImportError:
            pass
        else:
            raise SystemExit(f"blocker inactive: {name} imported")
    import nag_core.mmaudio.clip, nag_core.mmaudio.synchformer, nag_core.mmaudio.tokenizer
    from nag_core.errors import WeightsError
    try:
        nag_core.mmaudio.tokenizer.find_bpe_vocab()  # metadata lookup only, never an import
    except WeightsError:
        pass
    bad = [m for m in sys.modules if m.split(".")[0] in ("torchvision", "open_clip", "timm")]
    print("OK", bad)
''')


def test_encoders_import_with_torchvision_open_clip_timm_blocked(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]))
    run = subprocess.run([sys.executable, "-c", CHECK], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "OK []"


RUN = textwrap.dedent('''
    import importlib.util, sys
    try:
        import torchvision  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("blocker inactive")
    import torch
    import nag_core
    from nag_core.media import frames_from_images
    from nag_core.pipeline import FoleySession
    from nag_core.smoke import write_smoke_models
    from nag_core.weights import find_model_files, load_model_files

    write_smoke_models("models")
    model = load_model_files(find_model_files("models", "small_16k"))
    clip = frames_from_images(torch.rand(25, 32, 32, 3), fps=25, duration=1.0)
    session = FoleySession(model, clip)
    session.add_step("a ball bounces", seed=1, steps=2)
    session.add_step("a lamp beeps", seed=2, steps=2, method="negative_prompt")
    wave = session.composite().wave
    assert wave.shape == (1, 16000) and torch.isfinite(wave).all()

    spec = importlib.util.spec_from_file_location("nagfoley_pack", sys.argv[1] + "/__init__.py",
                                                  submodule_search_locations=[sys.argv[1]])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["nagfoley_pack"] = pack
    spec.loader.exec_module(pack)
    assert pack.NODE_CLASS_MAPPINGS
    bad = [m for m in sys.modules if m.split(".")[0] in ("torchvision", "open_clip", "timm")]
    print("OK", bad)
''')


def test_generation_and_node_pack_work_without_torchvision(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]),
               OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-c", RUN, str(REPO)], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "OK []"


META = textwrap.dedent('''
    import sys
    import torch
    from nag_core.mmaudio.network import MMAudioNetwork
    from nag_core.mmaudio.variants import VARIANTS
    from nag_core.smoke import write_smoke_models
    from nag_core.weights import find_model_files, load_model_files

    for config in VARIANTS.values():
        with torch.device("meta"):
            net = MMAudioNetwork(config)
        assert net.latent_rot.is_meta and net.t_embed.freqs.is_meta and net.sync_index.is_meta
    write_smoke_models("models")
    model = load_model_files(find_model_files("models", "small_16k"))
    assert not model.network.latent_rot.is_meta
    print("LOADED", sorted(m for m in ("torch._dynamo", "sympy") if m in sys.modules))
''')


def test_meta_device_build_and_loading_import_neither_dynamo_nor_sympy(tmp_path):
    # torch's meta arange/randn run Python references that import torch._dynamo and sympy
    # (about 800 modules and 1 s per process): the tables are built on the CPU instead.
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-c", META], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "LOADED []"
