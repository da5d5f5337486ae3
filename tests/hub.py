"""What tests of Hugging Face hub files share."""

import hashlib


def git_blob_sha1(data: bytes) -> str:
    """Git's blob hash: the hub's ETag for a small (non-LFS) file, and its blob name in the hub cache."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
