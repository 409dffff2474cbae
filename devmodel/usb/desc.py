"""USB descriptors declared as data (core.layout; design rule 9: cold, fixed layouts, never
parsed from guest data on a hot path). Built when the guest first asks for them
(GET_DESCRIPTOR), not at device construction.

Layouts: USB 2.0 spec chapter 9.6 (device, configuration, interface, endpoint, string) and
HID 1.11 section 6.2.1 (HID descriptor). `config_blob` assembles a configuration with its
interfaces, class descriptors and endpoints and fills wTotalLength, as QEMU's hw/usb/desc.c
does when it answers GET_DESCRIPTOR(CONFIGURATION).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import SimpleNamespace

from devmodel.core.layout import U8, U16, Const, Layout

DT_DEVICE = 1
DT_CONFIG = 2
DT_STRING = 3
DT_INTERFACE = 4
DT_ENDPOINT = 5
DT_DEVICE_QUALIFIER = 6
DT_HID = 0x21
DT_REPORT = 0x22
DT_HUB = 0x29

EP_CONTROL = 0
EP_ISOC = 1
EP_BULK = 2
EP_INTERRUPT = 3

CFG_ATT_ONE = 0x80
CFG_ATT_SELFPOWER = 0x40
CFG_ATT_WAKEUP = 0x20

@functools.cache
def layouts() -> SimpleNamespace:
    """The descriptor layouts, declared on first use."""
    DeviceDescriptor = Layout(
        ("bLength", Const(18, U8)),
        ("bDescriptorType", Const(DT_DEVICE, U8)),
        ("bcdUSB", U16),
        ("bDeviceClass", U8),
        ("bDeviceSubClass", U8),
        ("bDeviceProtocol", U8),
        ("bMaxPacketSize0", U8),
        ("idVendor", U16),
        ("idProduct", U16),
        ("bcdDevice", U16),
        ("iManufacturer", U8),
        ("iProduct", U8),
        ("iSerialNumber", U8),
        ("bNumConfigurations", U8),
    )

    ConfigDescriptor = Layout(
        ("bLength", Const(9, U8)),
        ("bDescriptorType", Const(DT_CONFIG, U8)),
        ("wTotalLength", U16),
        ("bNumInterfaces", U8),
        ("bConfigurationValue", U8),
        ("iConfiguration", U8),
        ("bmAttributes", U8),
        ("bMaxPower", U8),  # in 2 mA units
    )

    InterfaceDescriptor = Layout(
        ("bLength", Const(9, U8)),
        ("bDescriptorType", Const(DT_INTERFACE, U8)),
        ("bInterfaceNumber", U8),
        ("bAlternateSetting", U8),
        ("bNumEndpoints", U8),
        ("bInterfaceClass", U8),
        ("bInterfaceSubClass", U8),
        ("bInterfaceProtocol", U8),
        ("iInterface", U8),
    )

    EndpointDescriptor = Layout(
        ("bLength", Const(7, U8)),
        ("bDescriptorType", Const(DT_ENDPOINT, U8)),
        ("bEndpointAddress", U8),
        ("bmAttributes", U8),
        ("wMaxPacketSize", U16),
        ("bInterval", U8),
    )

    HidDescriptor = Layout(
        ("bLength", Const(9, U8)),
        ("bDescriptorType", Const(DT_HID, U8)),
        ("bcdHID", U16),
        ("bCountryCode", U8),
        ("bNumDescriptors", Const(1, U8)),
        ("bReportDescriptorType", Const(DT_REPORT, U8)),
        ("wDescriptorLength", U16),
    )
    return SimpleNamespace(DeviceDescriptor=DeviceDescriptor, ConfigDescriptor=ConfigDescriptor,
                           InterfaceDescriptor=InterfaceDescriptor,
                           EndpointDescriptor=EndpointDescriptor, HidDescriptor=HidDescriptor)


def __getattr__(name: str):
    """`desc.DeviceDescriptor` & co. as before, declared when first asked for."""
    if name in ("DeviceDescriptor", "ConfigDescriptor", "InterfaceDescriptor",
                "EndpointDescriptor", "HidDescriptor"):
        return getattr(layouts(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def string_descriptor(text: str) -> bytes:
    """UTF-16LE string with its 2-byte header; longer strings are cut to fit bLength."""
    body = text.encode("utf-16-le")[:252]
    return bytes((2 + len(body), DT_STRING)) + body


LANGID_DESCRIPTOR = bytes((4, DT_STRING, 0x09, 0x04))  # en-US


@dataclass(frozen=True)
class EndpointDesc:
    address: int  # bit 7: IN
    attributes: int  # transfer type
    max_packet: int
    interval: int = 0

    def build(self) -> bytes:
        return layouts().EndpointDescriptor.build(dict(
            bEndpointAddress=self.address, bmAttributes=self.attributes,
            wMaxPacketSize=self.max_packet, bInterval=self.interval))


@dataclass(frozen=True)
class InterfaceDesc:
    number: int
    cls: int
    subclass: int
    protocol: int
    endpoints: tuple[EndpointDesc, ...]
    extra: bytes = b""  # class descriptors between the interface and its endpoints
    iface_string: int = 0
    # A HID interface's class descriptor (HID 1.11 6.2.1), first after the interface
    # descriptor: (bcdHID, length of the report descriptor).
    hid: tuple[int, int] | None = None

    def hid_descriptor(self) -> bytes | None:
        if self.hid is None:
            return None
        bcd, report_len = self.hid
        return layouts().HidDescriptor.build(dict(bcdHID=bcd, bCountryCode=0,
                                                  wDescriptorLength=report_len))

    def build(self) -> bytes:
        head = layouts().InterfaceDescriptor.build(dict(
            bInterfaceNumber=self.number, bAlternateSetting=0, bNumEndpoints=len(self.endpoints),
            bInterfaceClass=self.cls, bInterfaceSubClass=self.subclass,
            bInterfaceProtocol=self.protocol, iInterface=self.iface_string))
        return (head + (self.hid_descriptor() or b"") + self.extra
                + b"".join(e.build() for e in self.endpoints))


@dataclass(frozen=True)
class DeviceDesc:
    vendor: int
    product: int
    max_packet0: int = 8
    bcd_usb: int = 0x0100
    bcd_device: int = 0
    device_class: int = 0
    device_protocol: int = 0
    manufacturer: str = "QEMU"
    product_name: str = ""
    serial: str = ""
    config_name: str = ""
    interfaces: tuple[InterfaceDesc, ...] = ()
    config_value: int = 1
    attributes: int = CFG_ATT_ONE
    max_power: int = 50

    def string_table(self) -> dict[int, str]:
        """Index -> text, in the order QEMU numbers its strings (manufacturer first)."""
        out: dict[int, str] = {}
        for i, s in enumerate((self.manufacturer, self.product_name, self.serial, self.config_name),
                              start=1):
            if s:
                out[i] = s
        return out

    def _index(self, n: int, s: str) -> int:
        return n if s else 0

    def device_blob(self) -> bytes:
        return layouts().DeviceDescriptor.build(dict(
            bcdUSB=self.bcd_usb, bDeviceClass=self.device_class, bDeviceSubClass=0,
            bDeviceProtocol=self.device_protocol, bMaxPacketSize0=self.max_packet0,
            idVendor=self.vendor, idProduct=self.product, bcdDevice=self.bcd_device,
            iManufacturer=self._index(1, self.manufacturer), iProduct=self._index(2, self.product_name),
            iSerialNumber=self._index(3, self.serial), bNumConfigurations=1))

    def config_blob(self) -> bytes:
        body = b"".join(i.build() for i in self.interfaces)
        head = layouts().ConfigDescriptor.build(dict(
            wTotalLength=9 + len(body), bNumInterfaces=len(self.interfaces),
            bConfigurationValue=self.config_value, iConfiguration=self._index(4, self.config_name),
            bmAttributes=self.attributes, bMaxPower=self.max_power))
        return head + body
