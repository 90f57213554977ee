# Build stage: the wheel, with the compiled tree scorer (stream_infer._forest) built by gcc.
FROM python:3.11.11-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY stream_infer ./stream_infer
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11.11-slim-bookworm

RUN useradd --create-home --uid 10001 app
WORKDIR /app
COPY --from=build /wheels /wheels
# The import fails the build if the compiled scorer is missing from the wheel.
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && python -c "import stream_infer._forest" && mkdir -p /models
COPY models /models

USER app
ENV PYTHONUNBUFFERED=1
ENTRYPOINT ["stream-infer"]
CMD ["run", "--config", "/etc/stream-infer/config.toml"]
