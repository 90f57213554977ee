import stream_infer


def test_the_public_api_is_curated() -> None:
    assert stream_infer.__all__ == [
        "Alert", "BatchOutcome", "Output", "Pipeline", "RunStats", "Runner", "RunnerConfig",
        "ScoreRecord", "Settings", "StreamInferError", "Topics", "Transaction", "__version__",
        "load_settings",
    ]
    for name in stream_infer.__all__:
        assert getattr(stream_infer, name) is not None
