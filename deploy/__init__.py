"""Deployment artefacts from a tuned winner: Bento, Kubernetes, Prometheus rules, Grafana, Locust."""
