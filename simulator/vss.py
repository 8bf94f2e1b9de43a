"""The VSS 6.0 signal paths the simulator emits, checked against the VSS 6.0 export in
``shared/data/vss/vss-6.0.json`` (datatype and unit in the comment).

Note: VSS 6.0 has no ``CombustionEngine.ECT``; the coolant temperature is
``Vehicle.Powertrain.CombustionEngine.EngineCoolant.Temperature``. Cell temperatures are
``TractionBattery.Temperature.Min/Max`` (there is no ``TractionBattery.CellTemperature`` branch).
"""

from __future__ import annotations

SPEED = "Vehicle.Speed"  # float, km/h
IS_MOVING = "Vehicle.IsMoving"  # boolean
TRAVELED_DISTANCE = "Vehicle.TraveledDistance"  # uint32, m (odometer)
LATITUDE = "Vehicle.CurrentLocation.Latitude"  # double, degrees [-90, 90]
LONGITUDE = "Vehicle.CurrentLocation.Longitude"  # double, degrees [-180, 180]
HEADING = "Vehicle.CurrentLocation.Heading"  # double, degrees [0, 360]; 0 = north, 90 = east
ACCEL_LONGITUDINAL = "Vehicle.Acceleration.Longitudinal"  # float, m/s^2
ACCEL_LATERAL = "Vehicle.Acceleration.Lateral"  # float, m/s^2
ACCEL_VERTICAL = "Vehicle.Acceleration.Vertical"  # float, m/s^2
AIR_TEMPERATURE = "Vehicle.Exterior.AirTemperature"  # float, Celsius
LV_BATTERY_VOLTAGE = "Vehicle.LowVoltageBattery.CurrentVoltage"  # float, V
LV_SYSTEM_STATE = "Vehicle.LowVoltageSystemState"  # string: UNDEFINED LOCK OFF ACC ON START
CURRENT_GEAR = "Vehicle.Powertrain.Transmission.CurrentGear"  # int8; 0 = neutral/park
DTC_LIST = "Vehicle.Diagnostics.DTCList"  # string[]

# Traction battery (BEV)
SOC = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current"  # float, percent [0, 100]
HV_VOLTAGE = "Vehicle.Powertrain.TractionBattery.CurrentVoltage"  # float, V
HV_CURRENT = "Vehicle.Powertrain.TractionBattery.CurrentCurrent"  # float, A; + = into battery
BATTERY_TEMP_MIN = "Vehicle.Powertrain.TractionBattery.Temperature.Min"  # float, Celsius
BATTERY_TEMP_MAX = "Vehicle.Powertrain.TractionBattery.Temperature.Max"  # float, Celsius
CELL_VOLTAGE_MIN = "Vehicle.Powertrain.TractionBattery.CellVoltage.Min"  # float, V
CELL_VOLTAGE_MAX = "Vehicle.Powertrain.TractionBattery.CellVoltage.Max"  # float, V
IS_CHARGING = "Vehicle.Powertrain.TractionBattery.Charging.IsCharging"  # boolean
# boolean: a charging cable is plugged in
CHARGE_CABLE_CONNECTED = (
    "Vehicle.Powertrain.TractionBattery.Charging.ChargingPort.AnyPosition.IsChargingCableConnected"
)
CHARGE_CURRENT_DC = "Vehicle.Powertrain.TractionBattery.Charging.ChargeCurrent.DC"  # float, A
CHARGE_CURRENT_AC = "Vehicle.Powertrain.TractionBattery.Charging.ChargeCurrent.Phase1"  # float, A

# Combustion engine (ICE)
ENGINE_SPEED = "Vehicle.Powertrain.CombustionEngine.Speed"  # float, rpm
COOLANT_TEMPERATURE = "Vehicle.Powertrain.CombustionEngine.EngineCoolant.Temperature"  # float, C
FUEL_LEVEL = "Vehicle.Powertrain.FuelSystem.RelativeLevel"  # uint8, percent [0, 100]

WHEELS: tuple[str, ...] = (
    "Row1.Wheel.Left",
    "Row1.Wheel.Right",
    "Row2.Wheel.Left",
    "Row2.Wheel.Right",
)
"""Front left, front right, rear left, rear right (VSS axle rows: Row1 = front)."""


def tire_pressure(wheel: str) -> str:
    """``uint16`` kPa (gauge)."""
    return f"Vehicle.Chassis.Axle.{wheel}.Tire.Pressure"


def brake_pad_wear(wheel: str) -> str:
    """``uint8`` percent, 0 = no wear, 100 = worn."""
    return f"Vehicle.Chassis.Axle.{wheel}.Brake.PadWear"


TIRE_PRESSURE = tuple(tire_pressure(w) for w in WHEELS)
BRAKE_PAD_WEAR = tuple(brake_pad_wear(w) for w in WHEELS)

COMMON_SIGNALS: tuple[str, ...] = (
    SPEED,
    IS_MOVING,
    TRAVELED_DISTANCE,
    LATITUDE,
    LONGITUDE,
    HEADING,
    ACCEL_LONGITUDINAL,
    ACCEL_LATERAL,
    ACCEL_VERTICAL,
    AIR_TEMPERATURE,
    LV_BATTERY_VOLTAGE,
    LV_SYSTEM_STATE,
    CURRENT_GEAR,
    *TIRE_PRESSURE,
    *BRAKE_PAD_WEAR,
    DTC_LIST,
)
BEV_SIGNALS: tuple[str, ...] = (
    SOC,
    HV_VOLTAGE,
    HV_CURRENT,
    BATTERY_TEMP_MIN,
    BATTERY_TEMP_MAX,
    CELL_VOLTAGE_MIN,
    CELL_VOLTAGE_MAX,
    IS_CHARGING,
    CHARGE_CABLE_CONNECTED,
    CHARGE_CURRENT_DC,
    CHARGE_CURRENT_AC,
)
ICE_SIGNALS: tuple[str, ...] = (ENGINE_SPEED, COOLANT_TEMPERATURE, FUEL_LEVEL)
ALL_SIGNALS: tuple[str, ...] = COMMON_SIGNALS + BEV_SIGNALS + ICE_SIGNALS
"""Every path the simulator can emit (a BEV emits COMMON + BEV, an ICE vehicle COMMON + ICE)."""
