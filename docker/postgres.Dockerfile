# PostgreSQL for the compose `cluster` profile, built locally from Debian's postgresql-15 (no registry to pull from).
# Runs as the `postgres` user; the first start initialises the cluster in the volume at PGDATA and creates the
# role and database `em` (postgres-entrypoint.sh). Authentication: trust for hosts on the server's own networks
# (the compose network; no port is published), as the container-only setup it is.
FROM debian:bookworm-slim
# No `main` cluster at install time: the entrypoint makes one in the volume.
RUN mkdir -p /etc/postgresql-common \
 && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends -o Dpkg::Options::=--force-confold \
      postgresql-15 \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old \
 && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql \
 && chmod 700 /var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data \
    EM_DB_NAME=em \
    EM_DB_USER=em
USER postgres
VOLUME ["/var/lib/postgresql/data"]
EXPOSE 5432
# Over TCP, as the clients connect: during the first start's initialisation the server listens on no TCP port.
HEALTHCHECK --interval=2s --timeout=3s --start-period=30s --retries=15 \
  CMD ["sh", "-c", "pg_isready -q -h 127.0.0.1 -U \"$EM_DB_USER\" -d \"$EM_DB_NAME\""]
# SIGINT: PostgreSQL's fast shutdown (SIGTERM's smart shutdown waits for every client to disconnect).
STOPSIGNAL SIGINT
ENTRYPOINT ["postgres-entrypoint.sh"]
