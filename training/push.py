"""Upload a bundle to a Hugging Face Hub model repository (its README.md is the model card).

A single bundle goes to the repository's root (``hf://owner/repo``). An ensemble refers to its member bundles by name,
beside it: it goes to ``<repo>/<ensemble>/`` with each member in ``<repo>/<member>/``, so that
``hf://owner/repo/<ensemble>`` brings its members along."""

from __future__ import annotations

import os

from caption_core.bundle import verify_bundle
from caption_core.hub import OfflineError, can_download_from_hub


def push_bundle(folder: str, repo_id: str, private: bool = False) -> str:
    manifest = verify_bundle(folder)  # never upload a damaged bundle
    if not can_download_from_hub():
        raise OfflineError(f"push needs the Hugging Face Hub: no internet (or HF_HUB_OFFLINE=1); "
                           f"bundle '{manifest['name']}' was not uploaded")
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    members = [m["bundle"] for m in manifest["decoder"].get("members", []) if "bundle" in m]
    if not members:
        api.upload_folder(folder_path=folder, repo_id=repo_id, repo_type="model",
                          commit_message=f"Upload caption bundle {manifest['name']}")
        return f"hf://{repo_id}"
    parent = os.path.dirname(os.path.abspath(folder))
    for name in [*members, manifest["name"]]:
        api.upload_folder(folder_path=os.path.join(parent, name), path_in_repo=name, repo_id=repo_id, repo_type="model",
                          commit_message=f"Upload caption bundle {name}" + (f" (a member of {manifest['name']})"
                                                                           if name != manifest["name"] else ""))
    return f"hf://{repo_id}/{manifest['name']}"
