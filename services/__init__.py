"""Proactive service: service centers, maintenance bookings and signed webhook delivery."""
