"""Everything that talks to Amazon SageMaker: the job builder every SageMaker command uses (session,
account, bucket, role, S3 layout, source tarball, dry-run request capture) and the CloudWatch metrics
of a training job. The launcher (bincount.launch.sagemaker), the tuner (bincount.launch.sagemaker_tuner)
and deploy (bincount.serve.deploy) build their requests on it."""
