from decimal import Decimal as D

from oscar.apps.shipping import methods, repository


class Standard(methods.Free):
    code = "standard"
    name = "Standard shipping"
    description = "Free, delivered in 5-7 business days."


class Express(methods.FixedPrice):
    code = "express"
    name = "Express shipping"
    description = "Delivered in 1-2 business days."
    charge_excl_tax = D("15.00")
    charge_incl_tax = D("15.00")


class Repository(repository.Repository):
    methods = (Standard(), Express())
