"""What mmext's runs are built from: configs, launching, dataset checks, hooks, metrics."""
