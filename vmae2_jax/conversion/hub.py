"""`hf://ORG/NAME[@REVISION]`: a Hugging Face Hub repository read from the local hub cache.

Nothing is downloaded at run time: the repository must already be in
huggingface_hub's cache (HF_HOME / HF_HUB_CACHE, laid out as
models--ORG--NAME/{blobs,snapshots/<commit>,refs/<branch>}), as
`hf download ORG/NAME` (`huggingface-cli download` before huggingface_hub 1.0)
or any `from_pretrained` call leaves it. A missing repository is one line
saying what to download.
"""

from __future__ import annotations

import re

SCHEME = "hf://"
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub(path) -> bool:
  return isinstance(path, str) and path.startswith(SCHEME)


def parse(uri: str) -> tuple[str, str | None]:
  """'hf://ORG/NAME@REV' -> ('ORG/NAME', 'REV' or None)."""
  body = uri[len(SCHEME):].strip("/")
  repo, _, revision = body.partition("@")
  if not _REPO.match(repo):
    raise ValueError(f"{uri}: not a Hugging Face repository; expected hf://ORG/NAME "
                     "(optionally @REVISION), e.g. hf://OpenGVLab/VideoMAEv2-Base")
  return repo, revision or None


def download_hint(repo: str, revision: str | None = None) -> str:
  rev = f" --revision {revision}" if revision else ""
  return (f"hf download {repo}{rev} (huggingface-cli download {repo}{rev} with "
          "huggingface_hub < 1.0)")


def resolve(uri: str) -> str:
  """The local snapshot folder of `uri` in the hub cache; FileNotFoundError (one line,
  with the download command) when it is not there. Never goes online."""
  repo, revision = parse(uri)
  try:
    import huggingface_hub  # noqa: PLC0415  (only hf:// sources need it)
    from huggingface_hub import constants  # noqa: PLC0415
  except ImportError:
    raise FileNotFoundError(f"{uri}: reading the Hugging Face cache needs huggingface_hub "
                            "(pip install huggingface_hub)") from None
  try:
    return huggingface_hub.snapshot_download(repo, revision=revision, local_files_only=True)
  except (OSError, ValueError):  # LocalEntryNotFoundError (a FileNotFoundError), bad names
    raise FileNotFoundError(
        f"{uri}: not in the Hugging Face cache {constants.HF_HUB_CACHE}"
        f"{' at revision ' + revision if revision else ''}; nothing is downloaded at run "
        f"time, fetch it first with: {download_hint(repo, revision)}") from None
