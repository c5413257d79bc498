"""Engine modules that misbehave on purpose, one per way (`tests/test_auto_check.py`): each exposes an
engine-signature ``lstm`` as `seqclf.rnn.engines.ENGINES` entries name modules, so `auto`'s check can run them
in its child process."""
