"""Remote diagnosis (DTCs, rule alarms) and LightGBM predictive maintenance."""
