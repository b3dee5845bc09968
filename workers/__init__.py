"""Code that runs on Ray worker nodes: the trial trainable (see workers/README.md).

    python -c "from workers.trainable import train_trial; help(train_trial)"
"""
