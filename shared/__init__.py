"""Common library of mindsight-ml: settings, payloads, errors, images, queues, gallery client, models."""
