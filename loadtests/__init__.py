"""Load tests: Locust users and shapes, run as a subprocess by `loadtests.runner`."""
