"""Accounts belong to users: `owner` becomes a user (the old free-text name is `holder`, same column), and transfers
record the balances they left behind."""
from django.conf import settings
from django.db import migrations, models
import django.db.models.deletion

# The demo user's accounts: the two the sample load test has always moved a cent between.
DEMO_USERNAME = "demo"
DEMO_ACCOUNTS = ("AC00001", "AC00002")


def give_demo_its_accounts(apps, schema_editor):
    """Existing sample data keeps working: a lab's demo user may still move money between its two accounts."""
    User = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    Account = apps.get_model("accounts", "Account")
    demo = User.objects.filter(username=DEMO_USERNAME).first()
    if demo is not None:
        Account.objects.filter(number__in=DEMO_ACCOUNTS, owner__isnull=True).update(owner=demo)


class Migration(migrations.Migration):

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ('accounts', '0001_initial'),
    ]

    operations = [
        # A rename in Django's model state only: the column stays "owner", so no table is rewritten and the
        # previous release still reads it while a rolling deploy replaces it.
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RenameField('account', 'owner', 'holder'),
                migrations.AlterField(
                    model_name='account',
                    name='holder',
                    field=models.CharField(db_column='owner', max_length=100, verbose_name='holder name'),
                ),
            ],
        ),
        migrations.AddField(
            model_name='account',
            name='owner',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT,
                                    related_name='accounts', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='transfer',
            name='from_balance_after',
            field=models.DecimalField(blank=True, decimal_places=2, max_digits=12, null=True),
        ),
        migrations.AddField(
            model_name='transfer',
            name='to_balance_after',
            field=models.DecimalField(blank=True, decimal_places=2, max_digits=12, null=True),
        ),
        migrations.RunPython(give_demo_its_accounts, migrations.RunPython.noop),
    ]
