# Expert Router gateway image (see docs/deployment.md).
#   docker build -t expert-router:0.1.0 .
#   docker run -p 8000:8000 -v "$PWD/gateway.yaml:/etc/expert-router/gateway.yaml:ro" expert-router:0.1.0
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /build
COPY pyproject.toml setup.py README.md ./
COPY src ./src
# gcc builds the C parts (classify/_native.c, wire/_http1.c) and leaves with the apt lists.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install . \
    && apt-get purge -y --auto-remove gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/* /build \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin expert-router

WORKDIR /
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["expert-router"]
CMD ["serve", "--config", "/etc/expert-router/gateway.yaml", "--host", "0.0.0.0", "--port", "8000"]
