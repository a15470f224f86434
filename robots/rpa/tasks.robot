*** Settings ***
Documentation       Reorder the office items that run low: read the stock
...                 list, find what is below its reorder level, and write one
...                 purchase order per supplier into the artifacts directory.
Library             OperatingSystem
Library             Collections
Library             Inventory


*** Variables ***
${INVENTORY}        ${CURDIR}${/}data${/}inventory.csv


*** Tasks ***
Reorder low stock
    ${rows}=    Read Inventory    ${INVENTORY}
    ${low}=    Items To Reorder    ${rows}
    Should Not Be Empty    ${low}    msg=Nothing to reorder in ${INVENTORY}
    FOR    ${item}    IN    @{low}
        Log    ${item}[sku] ${item}[item]: ${item}[on_hand] on hand, reorder ${item}[reorder_qty]
    END
    ${orders}=    Write Purchase Orders    ${low}    ${OUTPUT DIR}${/}purchase-orders
    FOR    ${order}    IN    @{orders}
        File Should Exist    ${order}
    END
    ${items}=    Get Length    ${low}
    ${files}=    Get Length    ${orders}
    Log To Console    ${items} items to reorder, ${files} purchase orders in ${OUTPUT DIR}${/}purchase-orders
