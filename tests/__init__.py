"""Tests of ESP OTA."""
