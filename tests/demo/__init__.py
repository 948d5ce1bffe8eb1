"""Tests of the demo's parts (demo/): firmware and feed, the feed server, Home Assistant's files."""
