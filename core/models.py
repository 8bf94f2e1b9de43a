"""Imports every table so ``SQLModel.metadata`` is complete (Alembic, tests)."""

from core.audit import AuditEvent, AuditHead  # noqa: F401
from core.auth.models import ApiCredential, Principal  # noqa: F401
from core.auth.sessions import ConsoleSession  # noqa: F401
from core.vehicles.models import Ecu, Vehicle, VehicleStatus  # noqa: F401
from diagnostics.models import (  # noqa: F401
    Alarm,
    DiagnosticsState,
    DtcEpisode,
    MaintenancePrediction,
    PdmFeatureBucket,
)
from ota.models import (  # noqa: F401
    Campaign,
    CampaignVehicle,
    InstallRecord,
    Rxswin,
    SoftwareImage,
    TufFile,
    UpdateRecord,
    VehicleManifest,
    VehicleReport,
)
from services.models import (  # noqa: F401
    Booking,
    OwnerNotification,
    ServiceCenter,
    ServiceInbox,
    ServiceOutcome,
    VehicleServiceBaseline,
    WebhookAttempt,
    WebhookEvent,
)
from ubi.models import (  # noqa: F401
    AnalyticsState,
    BatteryHealthRecord,
    BatterySession,
    Consent,
    ErasureRequest,
    Pseudonym,
    PseudonymKey,
    UbiEvent,
    UbiScore,
    UbiTrip,
    VehicleOwner,
)
