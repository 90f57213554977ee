FROM python:3.11.11-slim-bookworm

RUN useradd --create-home --uid 10001 app
WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream_infer ./stream_infer
COPY schemas ./schemas
RUN pip install --no-cache-dir . && mkdir -p /models
COPY models /models

USER app
ENV PYTHONUNBUFFERED=1 STREAM_INFER_DECODE__SCHEMA_DIR=/app/schemas
ENTRYPOINT ["stream-infer"]
CMD ["run", "--config", "/etc/stream-infer/config.toml"]
