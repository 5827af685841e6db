# EM fitting service. Build deps live only in the builder; the runtime image holds Python, the venv and the app.
# One image for every role: the API (CMD below, EM_BACKEND=local by default), and with the `distributed` extra
# installed also the RQ fit workers (`python -m service.worker`) and the Dask scheduler and workers (`dask ...`).
# Extra CA certificates (for a build behind a TLS-intercepting proxy) go in ./certs and reach the builder only.

FROM debian:bookworm-slim AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY certs/ /tmp/certs/
RUN if ls /tmp/certs/*.crt >/dev/null 2>&1; then \
      cp /tmp/certs/*.crt /usr/local/share/ca-certificates/ && update-ca-certificates; \
    fi
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
WORKDIR /build
COPY pyproject.toml README.md ./
COPY service ./service
# Trimmed after the install: tests, bytecode caches, pip; C/C++/Cython headers and sources (nothing is compiled at
# run time; about 20 MB, mostly pyarrow's); and the wheel's three identical copies of each pyarrow lib*.so, which
# pip cannot install as symlinks, made symlinks again (about 5 MB).
RUN /opt/venv/bin/pip install '.[distributed]' \
 && find /opt/venv -depth \( -name tests -o -name __pycache__ \) -type d -exec rm -rf {} + \
 && rm -rf /opt/venv/lib/python3*/site-packages/pip /opt/venv/lib/python3*/site-packages/setuptools \
 && rm -rf /opt/venv/lib/python3*/site-packages/pyarrow/include /opt/venv/lib/python3*/site-packages/pyarrow/src \
 && find /opt/venv \( -name '*.pxd' -o -name '*.pyx' -o -name '*.pxi' -o -name '*.h' -o -name '*.hpp' \
      -o -name '*.cc' -o -name '*.c' \) -type f -delete \
 && for full in /opt/venv/lib/python3*/site-packages/pyarrow/lib*.so.*.*.*; do \
      for alias in "${full%.so.*}.so" "${full%.*.*}"; do \
        if [ -f "$alias" ] && [ ! -L "$alias" ] && cmp -s "$alias" "$full"; then ln -sf "${full##*/}" "$alias"; fi; \
      done; \
    done

FROM debian:bookworm-slim
# apt-get clean: a locally debootstrapped base lacks the official image's hook that drops downloaded .debs.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old \
 && useradd --system --uid 10001 --user-group --home-dir /nonexistent --shell /usr/sbin/nologin em \
 && mkdir /data && chown em:em /data
COPY --from=builder /opt/venv /opt/venv
# One API process per data directory (it holds the job store's lock); fits run in EM_WORKERS processes.
# MPLCONFIGDIR: the user has no home; matplotlib's font cache is made once, on the first picture, and shared by the
# workers (without a writable directory every worker would rebuild it in a temporary one).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    EM_DATA_DIR=/data \
    MPLCONFIGDIR=/tmp/matplotlib
USER em
WORKDIR /tmp
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=5 \
  CMD ["python3", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
CMD ["uvicorn", "service.main:app", "--host", "0.0.0.0", "--port", "8000", "--no-access-log", "--timeout-graceful-shutdown", "10", "--http", "service.api.server_protocol:HeadLimitedHttpToolsProtocol"]
