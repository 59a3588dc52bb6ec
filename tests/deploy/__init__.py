"""Static checks of deploy/ (Dockerfiles, compose, Prometheus, Grafana) and helm/lookalike."""
