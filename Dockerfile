# peer-ring node image: `docker build -t peer-ring:0.1.0 .`
# The build stage compiles the hot path with mypyc (setup.py), so it needs a
# C compiler and mypy; the runtime stage gets only the compiled wheel.
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY src ./src
# mypy reads the dependencies' types while mypyc compiles, so they are
# installed here first; the dependency wheels and the compiled peer-ring
# wheel then go to /wheels.
RUN python -m pip install --no-cache-dir --upgrade pip 'setuptools>=77' wheel 'mypy>=1.10' \
 && python -m pip install --no-cache-dir '.[all]' \
 && python -m pip wheel --no-cache-dir --wheel-dir /wheels '.[all]' \
 && rm /wheels/peer_ring-*.whl \
 && PEER_RING_COMPILE=1 python -m pip wheel --no-cache-dir --no-build-isolation --no-deps \
      --wheel-dir /wheels .

FROM python:3.11-slim
RUN groupadd --system --gid 10001 peer-ring \
 && useradd --system --uid 10001 --gid peer-ring --home-dir /var/lib/peer-ring peer-ring \
 && mkdir -p /var/lib/peer-ring && chown peer-ring:peer-ring /var/lib/peer-ring
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001:10001
WORKDIR /var/lib/peer-ring
# peer transport, RESP, HTTP (/healthz, /readyz, /metrics)
EXPOSE 7100 6379 8080
ENTRYPOINT ["peer-ring"]
CMD ["node", "--help"]
