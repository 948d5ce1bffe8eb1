"""The demo: real Home Assistant with this integration, a signed feed and a simulated fleet.

`python -m demo` starts everything on 127.0.0.1 and prints where to log in; Ctrl-C stops it.
`demo.stack.DemoStack` is the same machinery for tests (tests/e2e). See docs/demo.md.
"""
