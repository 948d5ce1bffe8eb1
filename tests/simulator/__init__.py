"""Tests of the ESP32 device simulator."""
