"""Kernels the domain and the stages share: Arrow string membership and key hashes, the forked worker map."""
