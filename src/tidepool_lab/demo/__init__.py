"""``tidepool demo``: the talk's headline chart, reproduced on one machine in one command."""
