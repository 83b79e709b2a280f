# raypipe in a container: the same install script as the README, so the two never drift apart.
FROM python:3.11-slim-bookworm
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends make git && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/raypipe
COPY requirements.txt requirements-nodeps.txt pyproject.toml ./
COPY scripts/ scripts/
COPY raypipe/ raypipe/
COPY optimization/ optimization/
RUN PYTHON=python3 bash scripts/install.sh && rm -rf /var/lib/apt/lists/* /root/.cache/pip
COPY . .
ENV PATH=/opt/raypipe/.venv/bin:$PATH RAY_USAGE_STATS_ENABLED=0
CMD ["raypipe", "run", "configs/icp-quick.yaml"]
