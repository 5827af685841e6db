# Redis for the compose `cluster` profile, built locally from Debian's redis-server (no registry to pull from).
# Append-only file on: jobs queued on RQ survive a Redis restart. Runs as Debian's `redis` user; data in /data.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old \
 && mkdir /data && chown redis:redis /data
USER redis
WORKDIR /data
VOLUME ["/data"]
EXPOSE 6379
HEALTHCHECK --interval=2s --timeout=3s --start-period=10s --retries=15 CMD ["redis-cli", "ping"]
# No password and protected mode off: reachable only on the compose network (the compose file publishes no port).
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--dir", "/data", \
     "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no", "--logfile", ""]
