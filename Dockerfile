# One image for every dealflow process: the API (the default command), the Temporal
# worker (`python worker.py`) and the one-shot migration (`alembic upgrade head`).
# docker-compose.yml picks the command per service.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# WeasyPrint renders the quote and contract PDFs through Pango and HarfBuzz (it embeds
# font subsets with harfbuzz-subset, and warns that future versions will require it);
# DejaVu is there so a PDF never comes out with missing glyphs on an image with no fonts.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libpango-1.0-0 \
        libpangoft2-1.0-0 \
        libharfbuzz0b \
        libharfbuzz-subset0 \
        fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*

# A fixed, unprivileged user; its home is writable so fontconfig can keep its cache.
# /var/lib/dealflow (DEALFLOW_STATE_DIR in compose) holds rendered and signed documents;
# it exists here, owned by that user, so a fresh named volume mounted on it is writable.
RUN groupadd --system --gid 10001 dealflow \
    && useradd --system --uid 10001 --gid dealflow --create-home --home-dir /home/dealflow dealflow \
    && install -d -o dealflow -g dealflow /var/lib/dealflow

WORKDIR /app

# Dependencies first, from pyproject.toml alone, so a code change does not reinstall
# them. worker.py is a declared py-module; an empty stand-in lets this step build.
COPY pyproject.toml ./
RUN touch worker.py && pip install . && rm worker.py

# Then the project itself. The commands run from /app (uvicorn and alembic put the
# working directory on sys.path, `python worker.py` its own folder), which is where
# alembic.ini, the migrations and templates/ are.
COPY . .
RUN pip install --no-deps --force-reinstall .

USER dealflow
EXPOSE 8000

CMD ["uvicorn", "api.app:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000"]
