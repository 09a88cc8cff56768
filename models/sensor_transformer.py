"""sensor-transformer: forecast the grid's deduplicated metering streams 24 steps ahead from 96."""

from models.registry import TwinSpec, register_twin

SPEC = register_twin(
    TwinSpec(
        name="sensor-transformer",
        summary="PatchTST forecasting the next 24 steps (6 h) of every metering stream from the last 96 (24 h)",
        data="streams.npz",
        metric="mae (normalised test split)",
        baseline="seasonal naive (same time yesterday)",
    )
)
