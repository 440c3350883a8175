"""rpctl's tests: tests/unit (no privileges), tests/kernel (the real program on
the real kernel, as root) and tests/support (helpers shared with bench/)."""
