"""Tests of the train stage and the sky-region split."""
