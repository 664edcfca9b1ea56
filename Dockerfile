# One image for web, worker and beat.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HUBMGR_DATA_DIR=/data HUBMGR_STATIC_ROOT=/app/staticfiles
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY manage.py gunicorn.conf.py ./
COPY hubmgr ./hubmgr
COPY templates ./templates
COPY static ./static
RUN HUBMGR_SECRET_KEY=build-only python manage.py collectstatic --noinput -v0 \
    && useradd --system --home /data hubmgr && mkdir -p /data && chown hubmgr /data
USER hubmgr
EXPOSE 8000
CMD ["gunicorn", "hubmgr.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--threads", "8", "--access-logfile", "-"]
