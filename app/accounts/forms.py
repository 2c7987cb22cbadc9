"""Forms for the accounts app."""
from decimal import Decimal

from django import forms

from accounts.models import Account


class AccountChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj):
        return f"{obj.number} · {obj.owner} · {obj.bank.name}"


class TransferForm(forms.Form):
    # Account numbers, not primary keys, travel in the form: they are stable
    # across databases, so scripted clients can post them.
    from_account = AccountChoiceField(
        queryset=Account.objects.select_related("bank"), to_field_name="number", label="From"
    )
    to_account = AccountChoiceField(
        queryset=Account.objects.select_related("bank"), to_field_name="number", label="To"
    )
    amount = forms.DecimalField(max_digits=12, decimal_places=2, min_value=Decimal("0.01"))

    def clean(self):
        cleaned = super().clean()
        source, target = cleaned.get("from_account"), cleaned.get("to_account")
        if source and target and source.pk == target.pk:
            raise forms.ValidationError("Pick two different accounts.")
        return cleaned
