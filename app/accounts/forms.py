"""Forms for the accounts app."""
from decimal import Decimal

from django import forms

from accounts.models import Account


class AccountChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj):
        return f"{obj.number} · {obj.bank.name} · {obj.balance}"


class TransferForm(forms.Form):
    """Money between two of one customer's own accounts: the only accounts either list offers or accepts.

    A POST naming any other account (someone else's, or one that does not exist) fails as an invalid choice.
    """

    # Account numbers, not primary keys, travel in the form: they are stable
    # across databases, so scripted clients can post them.
    from_account = AccountChoiceField(queryset=Account.objects.none(), to_field_name="number", label="From")
    to_account = AccountChoiceField(queryset=Account.objects.none(), to_field_name="number", label="To")
    amount = forms.DecimalField(max_digits=12, decimal_places=2, min_value=Decimal("0.01"))

    def __init__(self, user, *args, **kwargs):
        super().__init__(*args, **kwargs)
        own = Account.objects.filter(owner=user).select_related("bank").order_by("number")
        self.fields["from_account"].queryset = own
        self.fields["to_account"].queryset = own

    def clean(self):
        cleaned = super().clean()
        source, target = cleaned.get("from_account"), cleaned.get("to_account")
        if source and target and source.pk == target.pk:
            raise forms.ValidationError("Pick two different accounts.")
        return cleaned
