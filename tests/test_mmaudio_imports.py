"""The encoders must import (and find the tokenizer vocabulary) where torchvision, open_clip and
timm cannot be imported at all, as on a CPU-only torch (FACTS §10)."""

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
