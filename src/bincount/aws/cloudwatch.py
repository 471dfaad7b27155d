"""A SageMaker training job's instance metrics (CPU, memory, disk, GPU), which SageMaker publishes to
CloudWatch, read into a run folder's ``utilization.{csv,json}`` so `bincount cost-report` sizes a job as
it sizes a local run."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bincount.errors import BincountError
from bincount.layout import UTILIZATION_CSV, UTILIZATION_JSON
from bincount.monitor.system import summarize, write_csv
from bincount.reports.sizing import load_prices

CLOUDWATCH_NAMESPACE = "/aws/sagemaker/TrainingJobs"
# CloudWatch metric -> our column. CPU and GPU figures are sums over cores / GPUs (400% = 4 busy cores).
CLOUDWATCH_METRICS = {
    "CPUUtilization": "cpu_percent",
    "MemoryUtilization": "mem_percent",
    "DiskUtilization": "disk_percent",
    "GPUUtilization": "gpu_percent",
    "GPUMemoryUtilization": "gpu_mem_percent",
}


def fetch_training_utilization(
    job_name: str, run: str | Path, session=None, prices: str | Path | None = None, host: int = 1, period_s: int = 60
) -> Path:
    """Read a training job's instance metrics (published by SageMaker to CloudWatch under
    ``/aws/sagemaker/TrainingJobs``, dimension Host=``JOB/algo-N``) into ``RUN/utilization.{csv,json}``.
    Per-epoch timing written by the in-container monitor into an existing ``utilization.json`` is kept."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    session = session or boto3.Session()
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    try:
        job = session.client("sagemaker").describe_training_job(TrainingJobName=job_name)
    except (BotoCoreError, ClientError) as e:
        raise BincountError(
            f"--sagemaker-job {job_name}: cannot describe the training job ({e}); check the name, "
            "region and AWS credentials"
        ) from None
    itype, count = job["ResourceConfig"]["InstanceType"], job["ResourceConfig"].get("InstanceCount", 1)
    spec = load_prices(prices)["instances"].get(itype, {})
    start = job.get("TrainingStartTime") or job["CreationTime"]
    end = (job.get("TrainingEndTime") or datetime.now(timezone.utc)) + timedelta(minutes=5)
    queries = [
        {
            "Id": f"{stat.lower()}{i}",
            "ReturnData": True,
            "MetricStat": {
                "Metric": {
                    "Namespace": CLOUDWATCH_NAMESPACE,
                    "MetricName": metric,
                    "Dimensions": [{"Name": "Host", "Value": f"{job_name}/algo-{host}"}],
                },
                "Period": period_s,
                "Stat": stat,
            },
        }
        for i, metric in enumerate(CLOUDWATCH_METRICS)
        for stat in ("Average", "Maximum")
    ]
    series: dict[str, dict] = {}
    paginator = session.client("cloudwatch").get_paginator("get_metric_data")
    for page in paginator.paginate(MetricDataQueries=queries, StartTime=start - timedelta(minutes=1), EndTime=end):
        for res in page["MetricDataResults"]:
            series.setdefault(res["Id"], {}).update(zip(res["Timestamps"], res["Values"]))
    if not any(series.values()):
        raise BincountError(
            f"--sagemaker-job {job_name}: CloudWatch has no instance metrics for host "
            f"{job_name}/algo-{host} between {start} and {end}"
        )
    vcpus, n_gpus = spec.get("vcpus"), spec.get("gpus") or 0
    scale = {"cpu_percent": vcpus or 1, "gpu_percent": max(n_gpus, 1), "gpu_mem_percent": max(n_gpus, 1)}
    times = sorted({ts for i in range(len(CLOUDWATCH_METRICS)) for ts in series.get(f"average{i}", {})})
    rows, peaks = [], {}
    for ts in times:
        row = {"t": (ts - times[0]).total_seconds(), "phase": "job"}
        for i, col in enumerate(CLOUDWATCH_METRICS.values()):
            v = series.get(f"average{i}", {}).get(ts)
            row[col] = None if v is None else v / scale.get(col, 1)
        rows.append(row)
    for i, col in enumerate(CLOUDWATCH_METRICS.values()):
        maxima = series.get(f"maximum{i}", {}).values()
        if maxima:
            peaks[col] = round(max(maxima) / scale.get(col, 1), 3)
    if spec:  # absolute figures from the instance's size
        for row in rows:
            row["mem_used_gb"] = None if row["mem_percent"] is None else row["mem_percent"] * spec["mem_gb"] / 100
            if n_gpus and row.get("gpu_mem_percent") is not None:
                row["gpu_mem_gb"] = row["gpu_mem_percent"] * spec["gpu_mem_gb"] * n_gpus / 100
        if "mem_percent" in peaks:
            peaks["mem_used_gb"] = round(peaks["mem_percent"] * spec["mem_gb"] / 100, 3)
        if n_gpus and "gpu_mem_percent" in peaks:
            peaks["gpu_mem_gb"] = round(peaks["gpu_mem_percent"] * spec["gpu_mem_gb"] * n_gpus / 100, 3)
    write_csv(rows, run / UTILIZATION_CSV)
    previous = json.loads((run / UTILIZATION_JSON).read_text()) if (run / UTILIZATION_JSON).is_file() else {}
    gpus = [{"name": spec.get("gpu") or "GPU", "mem_total_gb": spec.get("gpu_mem_gb")}] * n_gpus
    (run / UTILIZATION_JSON).write_text(
        json.dumps(
            {
                "source": f"CloudWatch {CLOUDWATCH_NAMESPACE} ({job_name}/algo-{host} of {count})",
                "interval_s": period_s,
                "duration_s": rows[-1]["t"] + period_s if rows else 0.0,
                "billable_s": job.get("BillableTimeInSeconds"),
                "machine": {
                    "hostname": f"{job_name}/algo-{host}",
                    "instance_type": itype,
                    "cpus": vcpus,
                    "cpus_usable": vcpus,
                    "mem_total_gb": spec.get("mem_gb"),
                    "gpus": gpus,
                },
                "summary": summarize(rows),
                "peaks": peaks,
                "timing": previous.get("timing", {}),
            },
            indent=2,
        )
    )
    return run / UTILIZATION_JSON
