# cellkit dashboard, CPU only.
#   docker build -t cellkit .
#   docker run --rm -p 8501:8501 -v cellkit-db:/home/cellkit/.cellkit \
#       -v /path/to/datasets:/data:ro -e CELLKIT_DATA_DIR=/data cellkit      # datasets: optional
# Then open http://localhost:8501. Images never leave the container; usage telemetry is off.
# For Ray cluster nodes (cellkit batch --engine ray; README "Batch analysis"): docker build --build-arg EXTRAS=cluster
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# opencv (pulled in by ultralytics) needs libGL and glib at import time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin cellkit

WORKDIR /app

# CPU wheels of torch first (the PyPI default would pull CUDA); requirements.txt's pins are then already met.
COPY requirements.txt requirements-cluster.txt ./
ARG EXTRAS=""
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1 \
    && pip install -r requirements.txt \
    && if [ "$EXTRAS" = "cluster" ]; then pip install -r requirements-cluster.txt; fi

COPY --chown=cellkit:cellkit . .
RUN pip install --no-deps -e .

ENV YOLO_OFFLINE=1 \
    YOLO_AUTOINSTALL=False \
    YOLO_CONFIG_DIR=/home/cellkit/.config/Ultralytics \
    MPLCONFIGDIR=/home/cellkit/.config/matplotlib \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false \
    RAY_USAGE_STATS_ENABLED=0 \
    STREAMLIT_SERVER_HEADLESS=true \
    CELLKIT_HOME=/home/cellkit/.cellkit \
    CELLKIT_CACHE_DIR=/home/cellkit/.cache/cellkit

USER cellkit
RUN mkdir -p /home/cellkit/.cellkit /home/cellkit/.cache/cellkit /home/cellkit/.config
VOLUME ["/home/cellkit/.cellkit"]

EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4); sys.exit(r.read().strip() != b'ok')"]

CMD ["streamlit", "run", "app.py", "--server.address", "0.0.0.0", "--server.port", "8501", "--browser.gatherUsageStats", "false"]
