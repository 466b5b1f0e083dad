"""Stand-in for nanochat, written by nanochat-arms for its tests (not nanochat's code)."""
