"""What a user runs on a workdir beside a study: open it (workdir: `fttrace.open`), where it stands (status), one
store from shards (merge), curves as TensorBoard events (tensorboard)."""
