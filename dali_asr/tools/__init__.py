"""What sits on top of the loader: the ``dali-asr`` command and its commands (plan, run, demo,
stats, bucket-sizes, tune-batch), dataset statistics and plots, batch-size tuning, the demo
dataset."""
