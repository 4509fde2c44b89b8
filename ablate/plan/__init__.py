"""From a command to tasks: the suite contract and its run loop (runner, suitekit), grids, sweeps, cost estimates and
progress bars."""
