"""The neutral core: what services, load tests, deploy and the tuner share (see README, Layout)."""
