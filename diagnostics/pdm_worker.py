"""The predictive-maintenance worker (``fleet worker pdm``).

Per consumer batch the records become an Arrow table (``ingestion.batches``) whose new samples
update the streaming window features (``diagnostics.features.FeatureState``; rows at or before
a vehicle's newest processed sample are replays and are skipped, so a re-sent message is not
counted twice). Every ``pdm_score_interval_s`` the vehicles seen since the last scoring are
scored with the active model version (``ActiveModel`` notices a switch without a restart),
the hysteresis decides which alerts are raised or cleared, the latest prediction per
(vehicle, component, horizon) is upserted in ``maintenance_prediction``, and the alert
crossings go to ``maintenance.predictions.v1`` after the commit.

Restarts: the hourly feature buckets changed since the last scoring are upserted in
``pdm_feature_bucket`` (one row per vehicle and hour; hours the windows no longer need are
deleted) before the offsets are committed. A worker that sees a vehicle for the first time
loads its buckets, and with them the newest sample already counted, so it continues the
windows exactly where the committed offsets are (replayed rows are skipped).

Without an active model version the worker keeps the features and scores nothing (logged once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from core.config import Settings
from core.db import session_scope, utcnow
from core.runner import HandlerResult
from diagnostics import repository
from diagnostics.features import BASELINE_H, BUCKET_MS, MAX_WINDOW_H, Buckets, FeatureState
from diagnostics.model_registry import ActiveModel, ModelRegistry, NoActiveModel
from diagnostics.pdm_scoring import AlertState, Prediction, Scorer, score_and_alert
from ingestion.batches import TelemetryTableHandler

log = logging.getLogger(__name__)
PREDICTION_VERSION = 1


class PdmHandler(TelemetryTableHandler):
    def __init__(self, settings: Settings, registry: ModelRegistry) -> None:
        super().__init__(settings)
        self.features = FeatureState()
        self.active = ActiveModel(registry, check_every_s=settings.pdm_model_check_s)
        self.alerts = AlertState()
        self.scorer: Scorer | None = None
        self.newest: dict[str, int] = {}
        """Per vehicle: the newest sample ts taken into the features (replays are skipped)."""
        self.touched: set[str] = set()
        self.loaded: set[str] = set()
        """Vehicles whose stored buckets were loaded (or found to have none)."""
        self.dirty: dict[str, int] = {}
        """Per vehicle: the oldest hour changed since the buckets were last stored."""
        self.last_scoring = time.monotonic()
        self.scored = 0
        self.events = 0
        self.replayed_rows = 0
        self._warned = False

    async def process(
        self, batch: Mapping[TopicPartition, Sequence[ConsumerRecord]]
    ) -> HandlerResult:
        decoded = self.decode(batch)
        if decoded.table.num_rows:
            new = [v for v in decoded.table["vin"].unique().to_pylist() if v not in self.loaded]
            if new:
                await asyncio.to_thread(self._restore, new)
        table = self._new_rows(decoded.table)
        if table.num_rows:
            self.touched.update(self.features.update(table).tolist())
        return HandlerResult(processed=decoded.records - decoded.skipped)

    def _new_rows(self, table: pa.Table) -> pa.Table:
        """Drop rows at or before their vehicle's newest processed sample (replays)."""
        if not table.num_rows:
            return table
        vins = table["vin"].to_numpy(zero_copy_only=False)
        ts = pc.cast(table["ts"], pa.int64()).to_numpy()
        unique, inverse = np.unique(vins, return_inverse=True)
        newest = np.array([self.newest.get(v, -(2**62)) for v in unique], dtype=np.int64)
        keep = ts > newest[inverse]
        # The same sample twice in one batch (a message re-sent quickly) counts once.
        _, first_of_each = np.unique(np.stack([inverse, ts]), axis=1, return_index=True)
        unique_rows = np.zeros(len(ts), dtype=bool)
        unique_rows[first_of_each] = True
        keep &= unique_rows
        if not keep.all():
            self.replayed_rows += int((~keep).sum())
            table = table.filter(pa.array(keep))
            ts, inverse = ts[keep], inverse[keep]
        if len(ts):
            latest = np.full(len(unique), -(2**62), dtype=np.int64)
            np.maximum.at(latest, inverse, ts)
            oldest = np.full(len(unique), 2**62, dtype=np.int64)
            np.minimum.at(oldest, inverse, ts)
            for vin, newest_ts, oldest_ts in zip(
                unique.tolist(), latest.tolist(), oldest.tolist(), strict=True
            ):
                if newest_ts < -(2**61):
                    continue  # no new row of this vehicle
                self.newest[vin] = max(int(newest_ts), self.newest.get(vin, -(2**62)))
                hour = int(oldest_ts) // BUCKET_MS
                self.dirty[vin] = min(hour, self.dirty.get(vin, hour))
        return table

    async def tick(self) -> None:
        if time.monotonic() - self.last_scoring >= self.settings.pdm_score_interval_s:
            await self.score()

    async def flush(self) -> None:
        await self.score()

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        # The runner has just scored and stored everything (flush). The next owner of these
        # partitions continues from the database, and so will this worker if they come back:
        # keep nothing in memory that could be stale by then.
        await super().on_revoked(partitions)
        self.features = FeatureState()
        self.newest.clear()
        self.loaded.clear()
        self.touched.clear()
        self.dirty.clear()

    async def score(self) -> None:
        """Score the vehicles seen since the last scoring; store, publish, then commit."""
        self.last_scoring = time.monotonic()
        pending = self.pending_offsets()
        vins = sorted(self.touched)
        scorer = self._scorer()
        if vins and scorer is not None:
            frame = self.features.features(np.array(vins))
            batch, alerting, changes = score_and_alert(scorer, self.alerts, frame)
            latest = batch.predictions(alerting)
            crossings = batch.predictions(alerting, cells=[(c.row, c.model) for c in changes])
            if latest:
                await asyncio.to_thread(self._store, latest)
            await self._publish(crossings)
            self.scored += len(vins)
        if scorer is not None or not vins:
            self.touched.clear()
        if self.dirty:
            dirty, self.dirty = self.dirty, {}
            await asyncio.to_thread(self._store_buckets, dirty)
        self.mark_durable(pending)

    def _scorer(self) -> Scorer | None:
        try:
            models = self.active.get()
        except NoActiveModel as exc:
            if not self._warned:
                log.warning("no active model version, predictions wait for one: %s", exc)
                self._warned = True
            return None
        if self.scorer is None or self.scorer.models is not models:
            self.scorer = Scorer(models)
        return self.scorer

    def _restore(self, vins: list[str]) -> None:
        """Load the stored buckets of vehicles this worker has not seen yet."""
        with session_scope(self.engine) as session:
            blobs = repository.feature_buckets(session, vins)
        self.loaded.update(vins)
        if not blobs:
            return
        table = pa.concat_tables(pa.ipc.open_stream(blob).read_all() for blob in blobs)
        restored = Buckets.from_arrow(table)
        self.features = FeatureState(self.features.buckets.merge(restored))
        for vin, newest in zip(restored.vins.tolist(), restored.newest_sample_ms(), strict=True):
            self.newest[vin] = max(int(newest), self.newest.get(vin, -(2**62)))

    def _store_buckets(self, dirty: Mapping[str, int]) -> None:
        """Upsert the changed hours of these vehicles and delete the hours no longer needed."""
        buckets = self.features.buckets
        if not len(buckets):
            return
        vins = buckets.vins[buckets.vin_index]
        since = np.array([dirty.get(v, 2**62) for v in buckets.vins.tolist()], dtype=np.int64)
        rows = np.flatnonzero(buckets.hour >= since[buckets.vin_index])
        table = buckets.take(rows).to_arrow()
        records = []
        for i in range(table.num_rows):
            sink = pa.BufferOutputStream()
            one = table.slice(i, 1)
            with pa.ipc.new_stream(sink, one.schema) as writer:
                writer.write_table(one)
            records.append(
                {"vin": str(vins[rows[i]]), "hour": int(buckets.hour[rows[i]]),
                 "data": sink.getvalue().to_pybytes()}
            )  # fmt: skip
        first, last = buckets.hour_range()
        with session_scope(self.engine) as session:
            repository.upsert_feature_buckets(session, records)
            for index, vin in enumerate(buckets.vins.tolist()):
                if vin in dirty:
                    repository.trim_feature_buckets(
                        session,
                        vin,
                        keep_after=int(last[index]) - MAX_WINDOW_H,
                        baseline_end=int(first[index]) + BASELINE_H,
                    )

    def _store(self, predictions: list[Prediction]) -> None:
        rows = [_prediction_row(p) for p in predictions]
        with session_scope(self.engine) as session:
            repository.upsert_predictions(session, rows)

    async def _publish(self, predictions: list[Prediction]) -> None:
        events = [(p.vin, {"v": PREDICTION_VERSION, **p.to_dict()}) for p in predictions]
        self.events += await self.publish(self.settings.predictions_topic, events)


def _prediction_row(prediction: Prediction) -> dict[str, Any]:
    return {
        "vin": prediction.vin,
        "component": prediction.component,
        "horizon_days": prediction.horizon_days,
        "probability": float(prediction.probability),
        "alerting": bool(prediction.alerting),
        "model_version": prediction.model_version,
        "reasons": [r.to_dict() for r in prediction.reasons],
        "scored_at": datetime.fromtimestamp(prediction.scored_at_ms / 1000, UTC),
        "updated_at": utcnow(),
    }


def build_pdm_handler(settings: Settings) -> PdmHandler:
    registry_dir = settings.pdm_registry_dir or settings.data_dir / "models"
    return PdmHandler(settings, ModelRegistry(registry_dir))
