"""Where the k8s tests read KubeRay's CRDs: ``$TLJOB_KUBERAY_CRDS`` when set, else
``<repo>/../shared/kuberay-crds/`` (a clone next to the shared folder). A git worktree
elsewhere sets the variable; the tests that need the CRDs skip, naming the folder, when it
is absent."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CRD_DIR = Path(os.environ.get("TLJOB_KUBERAY_CRDS") or REPO.parent / "shared" / "kuberay-crds")
