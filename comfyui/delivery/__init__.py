"""Delivery of output files: one module per mode (reference, inline base64, s3, store)."""

from comfyui.delivery.base import Delivery, DeliveryContext
from comfyui.delivery.modes import Deliveries, DeliveryPlan
from comfyui.delivery.pipeline import deliver_outputs

__all__ = ["Deliveries", "Delivery", "DeliveryContext", "DeliveryPlan", "deliver_outputs"]
