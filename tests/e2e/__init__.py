"""End-to-end tests: the demo stack driven through a real headless browser."""
