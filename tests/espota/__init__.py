"""Tests of the Home Assistant free espota library."""
